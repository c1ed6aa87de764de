"""sifguard: PKI trust for Singularity/Apptainer SIF images on Slurm clusters."""

__version__ = "0.1.0"
