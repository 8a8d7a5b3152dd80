import sys

from rollout.cli import main

# Guarded: a plugin loader that imports every module under plugins/ must not run the CLI.
if __name__ == "__main__":
    sys.exit(main())
