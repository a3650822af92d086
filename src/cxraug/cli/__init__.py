"""The `cxraug` command line (entry point: cxraug.cli.app:main)."""
