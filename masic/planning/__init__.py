"""Searches over whole plans, above the driver: each one plans a model many times through `masic.driver.plan`.

- `minimum_budget`: the smallest budget a model compiles under (what `masic compile` states when it refuses one);
- `sweep`: the plans across a range of budgets (`masic compile --budget-sweep`), as a table and a plot.
"""
