# Copyright (c) monai_segcam contributors. Licensed under the Apache License, Version 2.0.
