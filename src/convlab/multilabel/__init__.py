"""Several labels per image: a sigmoid per class, the binary cross-entropy, a threshold per label."""
