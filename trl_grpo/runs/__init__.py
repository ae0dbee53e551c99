"""Runs on disk: run folders, claims and atomic files, resume, result files, command-line plumbing."""
