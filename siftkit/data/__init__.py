"""The data: the dataset registry and data folder, verified download, exact loaders, shift specs and their datasets."""
