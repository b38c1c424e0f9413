from .cifar_format import GeneratedCIFAR100, make_cifar100
from .sklearn_digits import SklearnDigits

__all__ = ['SklearnDigits', 'GeneratedCIFAR100', 'make_cifar100']
