"""The benchmark behind ``scripts/bench``: the authority held against its floors and a baseline."""
