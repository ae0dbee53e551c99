"""Speed paths behind --fast_paths, each named for what it speeds up and tested against the stock path."""
