"""`python -m cxraug.cli VERB` (what torchrun runs)."""

from cxraug.cli.app import main

main()
