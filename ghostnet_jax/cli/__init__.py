"""What the commands (`python -m ghostnet_jax.<command>`) share and the library does not
need: one flag convention (`flags`), one way to fail (`errors`: messages, exit codes, the
verbosity rule) and the process setup done before JAX starts (`process`)."""
