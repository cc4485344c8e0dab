import scripts.utils
