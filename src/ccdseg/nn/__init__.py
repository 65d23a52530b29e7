"""The network: U-Net and its model file, input normalisation, losses, training tiles and loop."""
