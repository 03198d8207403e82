"""napari widgets: the only package that imports napari and Qt."""
