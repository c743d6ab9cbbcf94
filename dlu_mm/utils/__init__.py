from .checks import (check_4d, check_choice, check_divisible, check_int, check_odd,
                     check_same_device_dtype, check_spatial_scale)

__all__ = ['check_4d', 'check_choice', 'check_divisible', 'check_int', 'check_odd',
           'check_same_device_dtype', 'check_spatial_scale']
