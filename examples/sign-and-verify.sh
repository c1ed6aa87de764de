#!/usr/bin/env bash
# A site CA, a builder's code-signing certificate, a signed image verified from the root alone,
# and a site policy decision with live OCSP. Run from anywhere with sifguard installed.
set -euo pipefail
W=${1:-./sifguard-example}; mkdir -p "$W"; chmod 700 "$W"; cd "$W"
IMG=${IMG:-$(python3 -c 'import sifguard,os;print(os.path.join(os.path.dirname(sifguard.__file__),"..","tests","data","apptainer","images","busybox_amd64.sif"))')}
sifguard ca init --ca ca --name "Example HPC Site" --url http://127.0.0.1:18080
sifguard ca issue --ca ca --cn builder --email builder@hpc.example.org --out-key builder.key --out builder.pem
cp "$IMG" image.sif
sifguard sign image.sif --key builder.key --cert builder.pem        # the chain travels in the image
sifguard verify image.sif --roots ca/root.pem                       # trust from the root alone
sifguard ca serve --ca ca --listen 127.0.0.1:18080 & SERVE=$!; trap 'kill $SERVE' EXIT; sleep 2
cat > policy.yaml <<YAML
version: 1
trust: {roots: [$PWD/ca/root.pem]}
revocation: {mode: enforce, cache_dir: $PWD/cache}
cache: {images: $PWD/image-cache}
audit: {log: $PWD/audit.jsonl}
rules:
  - name: builders
    signers: [{email: "*@hpc.example.org"}]
YAML
sifguard verify image.sif --policy policy.yaml                      # allowed: OCSP good
sifguard ca revoke --ca ca --cert builder.pem --reason keyCompromise
rm -rf cache; sifguard verify image.sif --policy policy.yaml || echo "refused after revocation, as it should be"
