"""Published CIFAR-100 top-1 (%) of the baselines, from mdistiller (METHOD.md §8), shown beside ours."""

PUBLISHED_TOP1: dict[tuple[str, str, str, str], float] = {
    # (dataset, teacher, student, method): top-1
    ("cifar100", "resnet32x4", "resnet8x4", "kd"): 73.33,
    ("cifar100", "resnet32x4", "resnet8x4", "dkd"): 76.32,
    ("cifar100", "vgg13", "vgg8", "kd"): 72.98,
    ("cifar100", "vgg13", "vgg8", "dkd"): 74.68,
    ("cifar100", "resnet56", "resnet20", "kd"): 70.66,
    ("cifar100", "resnet56", "resnet20", "dkd"): 71.97,
    ("cifar100", "wrn_40_2", "wrn_16_2", "kd"): 74.92,
    ("cifar100", "wrn_40_2", "wrn_16_2", "dkd"): 76.23,
}
