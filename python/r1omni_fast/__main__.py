"""``python -m r1omni_fast`` (also what ``torchrun -m r1omni_fast`` runs)."""

from r1omni_fast.cli import main

if __name__ == "__main__":
    main()
