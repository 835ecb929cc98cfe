"""`make demo`: the main job. The fleet demo lands with the rollout issue."""
import sys


def main():
    print("make demo: not yet - the fleet demo (virtual boards, staged rollout) is not built yet.")
    print("Run `make test` for the suite and `make bench` for the figures.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
