"""`python -m mobilediff`: the command line (mobilediff.cli)."""
from mobilediff.cli import main

main()
