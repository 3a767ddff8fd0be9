"""One module per pipeline stage; each reads params.yaml and its declared inputs, writes its declared outputs."""
