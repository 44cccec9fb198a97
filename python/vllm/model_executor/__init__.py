"""Models, their layers and their weight loaders."""
