"""Stand-in for modules.devices: the device and dtypes the WebUI computes with (A1111 1.10 and Forge Neo both
have these names; the real ones are torch.device / torch.dtype objects, shown here as their str())."""
device = "cpu"
dtype = "torch.float32"
dtype_vae = "torch.float32"
dtype_unet = "torch.float32"
