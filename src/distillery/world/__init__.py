"""The offline world: a shop with real tools, seeded task families, an expert, and a bundled teacher.

Everything here runs without a network: the database is generated from a fixed seed, the tools
compute their answers, the tokenizer and the teacher ship inside the package. Figures measured on
it are labelled "offline world".

    from distillery.agent import Agent
    from distillery.models import load_model
    from distillery.world import SYSTEM_PROMPT
    from distillery.world.tasks import generate_tasks
    from distillery.world.tools import toolbox

    agent = Agent(load_model("world:teacher"), toolbox(), system=SYSTEM_PROMPT)
    trajectory = agent.run(generate_tasks("test", 1)[0])
"""

SYSTEM_PROMPT = (
    "You are the shop assistant. Use the tools to look up products, stock and orders, and to "
    "calculate, convert units and add days. Answer in one sentence; decline anything else."
)

# Reports label their figures with it (benchmarks/kd_study_report.py); v1's figures are in git history.
WORLD_VERSION = "v2"

__all__ = ["SYSTEM_PROMPT", "WORLD_VERSION"]
