"""`python -m recorder …` is the `recorder` command (a replay starts `recorder run` so)."""

from .cli import main

if __name__ == "__main__":
    main()
