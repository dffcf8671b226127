"""Real servers on 127.0.0.1 that tests point criticloop at (named fakes: they script replies)."""
