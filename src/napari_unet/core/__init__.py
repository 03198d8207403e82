"""Qt-free core of napari-unet: model, normalisation, tiling, training, metrics.

Nothing in this package imports napari, qtpy, magicgui or superqt.
"""
