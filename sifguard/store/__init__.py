"""The verified image store: verify once, run many.

A root-owned directory of immutable, content-addressed copies of SIF images, with
what verifying them found and what the site policy decided, so that every task of
every job on a node runs the same verified copy instead of making its own:

    DIR/objects/<digest>.sif          the copy (root; 0444, or 0400 + a read ACL entry per
                                      user who proved they can read a private source)
    DIR/objects/<digest>.json         its manifest: size, per-object digests, when staged
    DIR/findings/<digest>-<roots>.json  what verification found under a set of trust roots
                                      (signers' chains, object digests — never a verdict)
    DIR/index/<key>.json              source file identity (+ its first 4 KiB) → digest
    DIR/decisions/<key>.json          (digest, policy, candidate rules) → verdict, valid until
    DIR/tmp/, DIR/locks/              staging (root only)

Only root writes (the stager, `sifguard store stage`); the hooks read as the job's user.
Directories users read are 0711: entries are found by key, never listed — an index key
needs the source's first 4 KiB (so read access to it), an object name needs its digest.

Modules: layout (paths, safety), keys (content address, index and decision keys),
records (trusted JSON records), copy (one pass: copy while hashing), locks (OFD locks
that mark an entry in use; staging single-flight), acl (read access to private copies),
stage (the staging transaction), service (what the stager does for one request),
lookup (the hooks' warm path, no cryptography), server/wire/client (the stager over a
Unix socket, the image passed as a file descriptor), gc (list, LRU collection).
"""
