"""Everything a fastai user types, in one import: `from fastamp.all import *` (as `from fastai.vision.all import *`).

Written by hand, as fastai's own `all.py` files are: it only re-exports the public names of the modules below, and
importing it also brings the `Learner` methods they patch (`get_features`, `collapse_report`, `fine_probe`,
`get_adjusted_preds`)."""
from .core import *
from .hooks import *
from .models import *
from .cache import *
from .datasets import *
from .mixing import *
from .mixup import *
from .losses import *
from .data import *
from .devicedata import *
from .metrics import *
from .accuracies import *
from .evaluate import *
from .transfer import *
