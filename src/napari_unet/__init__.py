"""napari-unet: U-Net cell segmentation and few-stroke fine-tuning for napari."""

__version__ = "0.1.0"
