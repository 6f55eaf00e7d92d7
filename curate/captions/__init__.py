"""Caption operations and the offline WordNet they use."""
