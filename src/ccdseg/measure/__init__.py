"""From labels to objects: the cluster catalogue, sections of a class, the classical baseline."""
