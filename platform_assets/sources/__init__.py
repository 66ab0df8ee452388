"""Raw sources: the first asset of every tenant's lineage."""
