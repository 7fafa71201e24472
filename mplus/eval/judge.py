"""MT-Bench judges: the standard single-answer grading prompts, and two ways to run them.

- :class:`OpenAIJudge`: an OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM,
  llama.cpp, TGI, ...), plain HTTP with ``urllib`` (no client library), key from an environment
  variable, timeouts and retries; an endpoint that does not answer fails the check at start.
- :class:`HFJudge`: any local Hugging Face causal LM, run with transformers (greedy).

A judge returns the verdict text of each request, or None where that request failed (counted by
the caller); rating parsing is :func:`mplus.eval.metrics.parse_rating`.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request

from mplus.eval.common import EvalError, check_local, chunks
from mplus.eval.judge_prompts import (  # noqa: F401  (re-exported: the prompts' old home)
    NEED_REF_CATEGORIES,
    SINGLE_MATH_V1,
    SINGLE_MATH_V1_MULTI_TURN,
    SINGLE_V1,
    SINGLE_V1_MULTI_TURN,
    JudgePrompt,
    judge_request,
)

log = logging.getLogger("mplus.eval")


# ---------------------------------------------------------------- judges


def build_judge(cfg):
    """The judge ``eval.conversation.judge`` describes (not loaded/contacted until used)."""
    return OpenAIJudge(cfg) if cfg.kind == "openai" else HFJudge(cfg)


class OpenAIJudge:
    """Chat completions over plain HTTP: ``POST {url}/chat/completions``.

    Per request: retries on timeouts, refused connections, 429 and 5xx with exponential backoff.
    A request that still fails, or whose answer is not a chat completion, yields None (that
    question is lost, the run goes on); ``max_consecutive_failures`` in a row, or a rejected key,
    stop the run with :class:`EvalError`.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self.url = cfg.url.rstrip("/")
        self.errors = 0
        self._consecutive = 0

    def _headers(self) -> dict:
        h = {"Content-Type": "application/json"}
        key = os.environ.get(self.cfg.api_key_env) if self.cfg.api_key_env else None
        if key:
            h["Authorization"] = f"Bearer {key}"
        return h

    def check(self) -> None:
        """Fail now, before any model is loaded, if the endpoint does not answer.

        ``GET {url}/models`` (every OpenAI-compatible server has it); any HTTP answer but a
        rejected key counts as alive.

        Raises:
            EvalError: no answer (refused, unknown host, timeout) or the key is rejected.
        """
        env = self.cfg.api_key_env
        if env and not os.environ.get(env) and "api.openai.com" in self.url:
            raise EvalError(f"eval.conversation.judge: {self.url} needs a key; set ${env}")
        req = urllib.request.Request(f"{self.url}/models", headers=self._headers(), method="GET")
        try:
            with urllib.request.urlopen(req, timeout=min(self.cfg.timeout_s, 15.0)):
                pass
        except urllib.error.HTTPError as e:
            if e.code in (401, 403):
                raise EvalError(
                    f"eval.conversation.judge.url={self.url}: key rejected (HTTP "
                    f"{e.code}); check ${env}"
                ) from e
        except (urllib.error.URLError, TimeoutError, ConnectionError, ValueError) as e:
            reason = getattr(e, "reason", e)
            raise EvalError(
                f"eval.conversation.judge.url={self.url}: the judge endpoint does "
                f"not answer ({reason}); start it or fix the URL"
            ) from e
        log.info("Judge endpoint %s answers; model %s", self.url, self.cfg.model)

    def load(self) -> None:
        pass

    def complete(self, requests: list[tuple[str, str]]) -> list[str | None]:
        """Verdict text per (system, user) request; None where the request failed."""
        out = []
        for i, (system, user) in enumerate(requests):
            out.append(self._one(system, user))
            if (i + 1) % 20 == 0:
                log.info("judge: %d/%d verdicts", i + 1, len(requests))
        return out

    def _one(self, system: str, user: str) -> str | None:
        body = json.dumps(
            {
                "model": self.cfg.model,
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": user},
                ],
                "temperature": self.cfg.temperature,
                "max_tokens": self.cfg.max_new_tokens,
            }
        ).encode()
        last = "no attempt"
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                time.sleep(min(0.5 * 2 ** (attempt - 1), 30.0))
            req = urllib.request.Request(
                f"{self.url}/chat/completions", data=body, headers=self._headers(), method="POST"
            )
            try:
                with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as resp:
                    raw = resp.read()
            except urllib.error.HTTPError as e:
                if e.code in (401, 403):
                    raise EvalError(
                        f"eval.conversation.judge.url={self.url}: key rejected "
                        f"(HTTP {e.code}); check ${self.cfg.api_key_env}"
                    ) from e
                last = f"HTTP {e.code}"
                if e.code == 429 or e.code >= 500:
                    continue
                break  # 4xx: this request is bad (too long, ...); retrying will not help
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                last = str(getattr(e, "reason", e))
                continue
            try:
                text = json.loads(raw)["choices"][0]["message"]["content"]
            except (ValueError, KeyError, IndexError, TypeError):
                last = f"not a chat completion: {raw[:80]!r}"
                break
            self._consecutive = 0
            return text if isinstance(text, str) else None
        self.errors += 1
        self._consecutive += 1
        log.warning("judge request failed (%s); this turn is not graded", last)
        if self._consecutive >= self.cfg.max_consecutive_failures:
            raise EvalError(
                f"eval.conversation.judge.url={self.url}: {self._consecutive} requests "
                f"in a row failed (last: {last}); the judge endpoint stopped answering"
            )
        return None

    def close(self) -> None:
        pass


class HFJudge:
    """A local causal LM as the judge: chat template if its tokenizer has one, else HH format."""

    def __init__(self, cfg, device: str = "cpu", attn: str = "sdpa"):
        self.cfg = cfg
        self.device, self.attn = device, attn
        self.errors = 0
        self.model = self.tok = None

    def check(self) -> None:
        check_local(self.cfg.model, "eval.conversation.judge.model", want="judge model")

    def load(self) -> None:
        from mplus.eval.common import load_lm

        self.model, self.tok = load_lm(
            self.cfg.model,
            dtype=self.cfg.dtype,
            attn=self.attn,
            device=self.device,
            what="judge model",
        )

    def _prompt(self, system: str, user: str) -> str:
        if getattr(self.tok, "chat_template", None):
            return self.tok.apply_chat_template(
                [{"role": "system", "content": system}, {"role": "user", "content": user}],
                tokenize=False,
                add_generation_prompt=True,
            )
        return f"\n\nHuman: {system}\n\n{user}\n\nAssistant:"

    def complete(self, requests: list[tuple[str, str]]) -> list[str | None]:
        from mplus.rollout import HFGenerateEngine

        if self.model is None:
            self.load()
        engine = HFGenerateEngine(
            self.tok,
            max_new_tokens=self.cfg.max_new_tokens,
            temperature=self.cfg.temperature,
            stop_strings=("\n\nHuman:",),
        )
        out: list[str | None] = []
        prompts = [self._prompt(s, u) for s, u in requests]
        for i, batch in enumerate(chunks(prompts, self.cfg.batch_size)):
            out.extend(engine.generate(self.model, batch).responses)
            log.info(
                "judge: %d/%d verdicts",
                min((i + 1) * self.cfg.batch_size, len(prompts)),
                len(prompts),
            )
        return out

    def close(self) -> None:
        from mplus.eval.common import free

        self.model = self.tok = None
        free()
