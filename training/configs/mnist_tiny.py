"""Tiny growing ViT on the MNIST test set: `digits_tiny` on 28x28 images."""

from training.configs import digits_tiny


def get_config() -> dict:
    """`digits_tiny`'s reduced ViT and schedule on 28x28 MNIST digits.

    Command:
        ```bash
        python -m training.train --config mnist_tiny \\
            --set data.data_dir=DIR --workdir runs/mnist_tiny
        # DIR holds t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz
        ```

    Hardware: 2 CPU cores, either backend; a few minutes of CPU time.

    Expected result: the reduced model (21,914 parameters; 7x7 patches, so
    16 tokens as on the 8x8 digits) grows at the ends of epochs 8, 17 and
    26 and reaches about 95 % top-1 on the 2,000 held-out images, as does
    its uniform counterpart (`mnist_tiny_uniform`, 40,682 parameters);
    see the Results page of the documentation for the seeded comparison.

    Data: the 10,000 images of the MNIST test set (MNIST ships with no
    dependency, so its files are read from `data.data_dir`), split 8,000
    for training and 2,000 for testing, stratified by the seed;
    normalised with MNIST's mean and standard deviation.
    """
    config = digits_tiny.get_config()
    config["name"] = "mnist_tiny"
    config["data"].update(
        dataset="mnist_t10k", image_size=28, mean=(0.1307,), std=(0.3081,)
    )
    config["model"].update(image_size=28, patch_size=7)
    return config
