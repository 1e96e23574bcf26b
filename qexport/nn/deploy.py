"""The integer (deploy) form moved to qexport.lower.modules (the lowering stage). Kept as an alias."""
from ..lower.modules import *  # noqa: F401,F403
from ..lower.modules import (DeployConv2d, DeployGlobalAvgPool, DeployLinear, DeployQuantize,  # noqa: F401
                             deploy_layers, find_bn_pairs, to_deploy)
