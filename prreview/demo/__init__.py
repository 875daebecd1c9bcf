"""What `pr-review demo` runs besides pr-review itself: a local GitHub and, with `--llm scripted`, a model.

`DemoGitHub` serves GitHub's REST reads for pull requests stored in it, such as the bundled
sample PR (`install_sample_pr`: acme/payments#42 with planted defects); `DemoLLM` answers an
OpenAI-compatible chat API with a deterministic toy reviewer. Both run on 127.0.0.1 in a
background thread (`start()`/`stop()`, or `with`). The test suite's fakes extend them.
"""

from prreview.demo._github_model import FakeFile
from prreview.demo.github import DemoGitHub
from prreview.demo.llm import DemoLLM
from prreview.demo.sample_pr import install_sample_pr

__all__ = ["DemoGitHub", "DemoLLM", "FakeFile", "install_sample_pr"]
