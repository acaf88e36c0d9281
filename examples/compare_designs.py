"""Compare the baseline designs on scenario S2 and on the same scenario in other units.

python examples/compare_designs.py [--quick]
"""

import sys

import bayesdesign as bd
from bayesdesign.summary import format_table, summarize

quick = "--quick" in sys.argv
horizon, reps = (300, 20) if quick else (2000, 300)
designs = ["uniform", "explore-then-neyman", "clip-ogd", "plugin-neyman"]

env = bd.get_scenario("S2")
print(format_table(summarize(bd.simulate(env, designs, horizon, reps, seed=0)), "S2"))

# ages 18-90 and revenue in dollars: the designs behave identically
dollars = bd.rescale(env, low=[18.0], high=[90.0], shift=120.0, scale=35.0)
print(format_table(summarize(bd.simulate(dollars, designs, horizon, reps, seed=0)), "\nS2 in other units"))
