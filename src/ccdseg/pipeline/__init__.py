"""The file job (FITS in, every output written) and the runners that apply it to many files."""
