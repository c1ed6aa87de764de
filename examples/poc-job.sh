#!/bin/bash
#SBATCH --job-name=sifguard-poc
#SBATCH --output=%x-%j.out
# The original proof of concept's job, under sifguard: one signed and one unsigned image.
# The controller prolog refuses the whole job before it starts, because unsigned.sif is
# not signed by a trusted signer; remove the second line and the job runs.
# (Sign with: sifguard sign signed.sif --key builder.key --cert builder.pem)
apptainer exec "$SLURM_SUBMIT_DIR/signed.sif" cat /etc/os-release
apptainer exec "$SLURM_SUBMIT_DIR/unsigned.sif" cat /etc/os-release
