"""``python -m pyrocluster``."""

from pyrocluster.cli import main

if __name__ == "__main__":
    main()
