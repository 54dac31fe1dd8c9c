"""Python-backend model code copied into Triton model repositories (not imported by nlu_deploy)."""
