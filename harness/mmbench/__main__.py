"""``python -m mmbench …``: the same command as ``mmbench …``."""

from mmbench.cli import main

if __name__ == "__main__":
    main()
