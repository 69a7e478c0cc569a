"""The shared steps of every photo: reading images, the options, preprocessing, views, scoring and ages."""
