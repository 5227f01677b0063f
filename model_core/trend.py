"""Stage 1: ``TemporalGRUGenerator``, the trend model.

A GRU over the (transformed) continuous features, the discrete states and, where the timestamps show a
daily or weekly cycle, each step's time of day and week (calendar.py), trained by teacher forcing to
predict the next step: the continuous values (a regression) and each discrete feature's next state (a
classification). The *trend* of a window is its one-step-ahead prediction ``trend_t = f(x_{t-C..t-1})``
from the ``C`` real steps before each position; the *residual* ``x_t - trend_t`` is what stage 2 models.

New trends come from a stochastic rollout: starting from a context of ``C`` steps, each step predicts
``trend_t`` and the next states' probabilities, samples the states, draws a residual vector from the
pool of real training residuals (a bootstrap, so the rollout noise keeps the residuals' cross-feature
correlation and heavy tails), and feeds ``trend_t + residual`` and the states back in. Rollouts are
therefore as diverse as the data's own innovations and cannot collapse onto the deterministic fixed
point of the GRU. With ``state_lead`` the continuous prediction of a step also reads the states just
sampled for it (states first, values after), so a pressure steps and a tank turns in the hour its pump
switches.

Why the states are sampled here: a pump's switching depends on how long it has run, which the GRU's
hidden state can track and a nearest-neighbour bootstrap cannot. When the diffusion sampled the states
from a trend without them, BATADAL's pump PU2 switched 1.31 times per day-long window (real: 0.92);
sampled by stage 1, 0.99-1.01 (docs/DECISIONS.md, "Stage 1 samples the discrete states").

The residual draw is *local*: only among the residuals of the ``k`` training rows whose trend is nearest
the current one, among rows in the sampled states first. Innovations depend on the state: a pump that is
running at a steady flow gets the innovations seen at such flows, not the jump of a pump switching on
somewhere else in the plant.
"""

from __future__ import annotations

import torch
from torch import nn

#: Random candidates per step of the plain bootstrap (``innovation_neighbours`` 0) when the draw must keep
#: to the couplings: with one, every draw that leaves a state's interval would end on its edge.
BOOTSTRAP_CANDIDATES = 16


def one_hot_states(tokens: torch.Tensor, n_categories: list[int]) -> torch.Tensor:
    """Discrete state indices [..., Dd] -> concatenated one-hot vectors [..., sum(n_categories)]."""
    if not n_categories:
        return tokens.new_zeros((*tokens.shape[:-1], 0), dtype=torch.float32)
    parts = [nn.functional.one_hot(tokens[..., j], n).float() for j, n in enumerate(n_categories)]
    return torch.cat(parts, dim=-1)


class TemporalGRUGenerator(nn.Module):
    transition_mask: torch.Tensor  # [S, S] block-diagonal: 1 where a weight links two states of one feature

    def __init__(
        self,
        n_features: int,
        hidden_size: int,
        num_layers: int,
        n_categories: list[int] | None = None,
        n_calendar: int = 0,
        state_lead: bool = False,
    ):
        super().__init__()
        self.n_categories = list(n_categories or [])
        # Calendar features of each input row (calendar.py), read beside the values: the hour a step is at.
        self.n_calendar = n_calendar
        n_states = sum(self.n_categories)
        self.gru = nn.GRU(n_features + n_states + n_calendar, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, n_features)
        self.state_head = nn.Linear(hidden_size, n_states) if n_states else None
        # Each feature's current state has a direct say in its next one (a learned transition matrix per
        # feature, beside the GRU): the discrete analogue of predicting the change. A pump that ran twice
        # for two hours in a year leaves too few steps to teach the shared hidden state that its runs last;
        # one weight per (current state, next state), started from the counted chain (``start_from_counts``),
        # holds it from those few steps. Block-diagonal: a full matrix let one pump's state push another's
        # directly, and measured worse (docs/DECISIONS.md).
        self.state_transition = nn.Linear(n_states, n_states, bias=False) if n_states else None
        # The continuous prediction of a step reads that step's states (sampled first in the rollout): a
        # flow jumps and a pressure steps when its pump switches, and a tank turns. From the history alone
        # such a step cannot be foreseen; given the new state it nearly can. Zero at start, so training
        # starts from the history-only prediction.
        self.state_lead = nn.Linear(n_states, n_features, bias=False) if n_states and state_lead else None
        if self.state_lead is not None:
            nn.init.zeros_(self.state_lead.weight)
        blocks = torch.block_diag(*[torch.ones(n, n) for n in self.n_categories]) if n_states else torch.zeros(0, 0)
        self.register_buffer("transition_mask", blocks, persistent=False)

    @torch.no_grad()
    def start_from_counts(self, current: torch.Tensor, following: torch.Tensor) -> None:
        """Set each feature's transition weights to the log of its counted transition frequencies.

        ``current`` and ``following`` [N, Dd] are the states of N consecutive row pairs. Training then
        starts from the first-order Markov chain of every feature (add-one smoothed), and the GRU head
        learns what the history adds. From random weights, a pump that ran twice for two hours in a year
        gives too few steps to learn that its runs last: its runs came out one hour long.
        """
        if self.state_transition is None:
            return
        weight = torch.zeros_like(self.state_transition.weight)
        offset = 0
        for j, n in enumerate(self.n_categories):
            counts = torch.ones(n, n)  # [next, current], add-one smoothing
            counts.index_put_((following[:, j].cpu(), current[:, j].cpu()), torch.ones(len(current)), accumulate=True)
            block = slice(offset, offset + n)
            weight[block, block] = (counts / counts.sum(dim=0, keepdim=True)).log().to(weight.device)
            offset += n
        self.state_transition.weight.copy_(weight)

    def forward(
        self,
        x: torch.Tensor,
        tokens: torch.Tensor,
        hidden: torch.Tensor | None = None,
        calendar: torch.Tensor | None = None,
        next_tokens: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` [B, L, D], state indices ``tokens`` [B, L, Dd] and the rows' ``calendar`` features
        [B, L, n_calendar] -> (predictions [B, L, D], state logits [B, L, sum(n_categories)], hidden), where
        position ``t`` predicts step ``t + 1``.

        ``next_tokens`` [B, K, Dd] (K <= L) are the states of steps ``1 .. K``, the steps the first K
        positions predict; the continuous prediction reads them (``predict``). ``tokens`` and
        ``next_tokens`` are ignored (may have Dd = 0) when the model does not model states, ``calendar``
        when it reads no calendar.
        """
        out, logits, hidden = self.encode(x, tokens, hidden, calendar)
        return self.predict(x, out, logits, next_tokens), logits, hidden

    def encode(
        self,
        x: torch.Tensor,
        tokens: torch.Tensor,
        hidden: torch.Tensor | None = None,
        calendar: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The GRU's outputs [B, L, H] over the rows, the next states' logits and the hidden state."""
        inputs = [x]
        states = None
        if self.state_head is not None:
            states = one_hot_states(tokens, self.n_categories).to(x.device)
            inputs.append(states)
        if self.n_calendar:
            if calendar is None or calendar.shape[-1] != self.n_calendar:
                raise ValueError(f"this trend model reads {self.n_calendar} calendar features per step")
            inputs.append(calendar.to(x.device))
        out, hidden = self.gru(torch.cat(inputs, dim=-1), hidden)
        if self.state_head is None or self.state_transition is None or states is None:
            return out, out.new_zeros((*out.shape[:-1], 0)), hidden
        transition = nn.functional.linear(states, self.state_transition.weight * self.transition_mask)
        return out, self.state_head(out) + transition, hidden

    def predict(
        self, x: torch.Tensor, out: torch.Tensor, logits: torch.Tensor, next_tokens: torch.Tensor | None
    ) -> torch.Tensor:
        """The next step's continuous values [B, L, D] from the rows ``x``, the GRU outputs ``out`` and the
        next states: ``next_tokens`` [B, K, Dd] for the first K positions, the predicted state
        probabilities (softmax of ``logits``) where the next state is not known, e.g. the step after a
        window. The state term is linear, so an unknown state contributes its expected effect.
        """
        # Predict the change, not the level: the identity is a strong prior for slow sensors.
        predictions = x + self.head(out)
        if self.state_lead is None:
            return predictions
        lead = torch.cat([part.softmax(dim=-1) for part in logits.split(self.n_categories, dim=-1)], dim=-1)
        if next_tokens is not None and next_tokens.shape[1]:
            known = next_tokens.shape[1]
            lead = torch.cat([one_hot_states(next_tokens, self.n_categories).to(x.device), lead[:, known:]], dim=1)
        return predictions + self.state_lead(lead)

    def state_loss(self, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the next states, averaged over the discrete features (0 without states)."""
        if not self.n_categories:
            return logits.new_zeros(())
        losses = [
            nn.functional.cross_entropy(part.reshape(-1, n), tokens[..., j].reshape(-1))
            for j, (part, n) in enumerate(zip(logits.split(self.n_categories, dim=-1), self.n_categories, strict=True))
        ]
        return torch.stack(losses).mean()

    def window_trend(
        self,
        context: torch.Tensor,
        window: torch.Tensor,
        context_tokens: torch.Tensor,
        window_tokens: torch.Tensor,
        calendar: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Trend [B, L + 1, D] of ``window`` [B, L, D] given the ``context`` [B, C, D] right before it
        (and the states of both, and the calendar features [B, C + L, n_calendar] of their rows).

        The extra last step is the prediction of the step after the window. Step ``t + 1``'s trend is
        computed from ``x_t``, so it tells the denoiser which residual step ``t`` had (see
        ``ResidualDenoiser.forward``).
        """
        tokens = torch.cat([context_tokens, window_tokens], dim=1)
        predictions, _, _ = self(torch.cat([context, window], dim=1), tokens, calendar=calendar, next_tokens=tokens[:, 1:])
        return predictions[:, context.shape[1] - 1 :]

    def sample_states(self, logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One state per discrete feature [B, Dd] from the state logits [B, sum(n_categories)]."""
        if not self.n_categories:
            return torch.zeros(len(logits), 0, dtype=torch.long, device=logits.device)
        # Gumbel-max, one uniform draw for all features (cheaper than a multinomial per feature).
        uniform = torch.rand(logits.shape, generator=generator).to(logits.device).clamp_min(1e-20)
        perturbed = logits - torch.log(-torch.log(uniform))
        return torch.stack([part.argmax(dim=-1) for part in perturbed.split(self.n_categories, dim=-1)], dim=-1)

    @torch.no_grad()
    def rollout(
        self,
        context: torch.Tensor,
        context_tokens: torch.Tensor,
        length: int,
        innovations: InnovationPool,
        generator: torch.Generator,
        calendar: torch.Tensor | None = None,
        context_rows: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Generate ``length`` steps after ``context`` [B, C, D] with its states ``context_tokens`` (and
        ``calendar`` [B, C + length, n_calendar]: the features of the context's rows and of the steps to
        generate). ``context_rows`` [B], the training row of each context's last step, keeps the innovation
        draws off the real continuation (``InnovationPool.pick``).

        Returns ``(trend, path, tokens)``: the trend [B, length + 1, D] the diffusion stage is conditioned
        on (as ``window_trend``, with the step after the last), the sampled path [B, length, D] it was
        rolled out along and the sampled states [B, length, Dd] (Dd = 0 without a state head).
        """
        context_len = context.shape[1]
        known = calendar[:, :context_len] if calendar is not None else None
        out, logits, hidden = self.encode(context, context_tokens, calendar=known)
        row, out, logit = context[:, -1:], out[:, -1:], logits[:, -1:]
        trends, path, states = [], [], []
        previous = context_rows
        for step in range(length):
            # The states first, then the values that follow them.
            state = self.sample_states(logit[:, 0], generator)
            prediction = self.predict(row, out, logit, state[:, None])
            innovation, previous = innovations.pick(prediction[:, 0], generator, state, previous)
            row = prediction + innovation[:, None]
            trends.append(prediction)
            path.append(row)
            states.append(state)
            now = calendar[:, context_len + step : context_len + step + 1] if calendar is not None else None
            out, logit, hidden = self.encode(row, state[:, None], hidden, calendar=now)
        trends.append(self.predict(row, out, logit, None))
        return torch.cat(trends, dim=1), torch.cat(path, dim=1), torch.stack(states, dim=1)


class InnovationPool:
    """Training residuals with the trend and the states they occurred at.

    ``draw`` picks among the ``neighbours`` rows whose trend is nearest the current one, taken from the
    rows with the fewest states differing from the current states (the same states, where the pool has
    them). ``neighbours`` 0 draws from the whole pool (a plain bootstrap, states ignored).

    With ``state_bounds`` (``low``/``high`` [sum(n_categories), D]: the model-space interval each state
    allows each feature, from the exact couplings in the data), ``draw`` picks among the candidates (the
    ``neighbours`` nearest rows, or ``BOOTSTRAP_CANDIDATES`` random ones) one that keeps the new row
    inside its states' intervals, and if none does, moves the row to the nearest allowed value. Why: a
    running pump's steady flow otherwise random-walks across the edge of the flow's zero, and a pressure
    out of the range of its pump's state; the couplings then repaired 4-8 % of BATADAL's generated flow
    and pressure cells after the fact, as a jump (docs/DECISIONS.md).

    With ``rows`` ([M]: the training row of each residual), ``pick`` leaves out the residual of the row right
    after a given one. Why: a rollout at a real moment (its first step after a real context, or any step
    whose innovation came from the row before) has that row's real successor among its nearest trends, at
    distance about 0; drawing it continues the real series. With 2 neighbours that happened at every step
    with probability 1/2, and 9 % of BATADAL's synthetic windows came closer to a real window than 95 % of
    real windows come to another period's (docs/DECISIONS.md).
    """

    def __init__(
        self,
        trends: torch.Tensor,
        residuals: torch.Tensor,
        neighbours: int,
        states: torch.Tensor | None = None,
        n_categories: list[int] | None = None,
        state_bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
        rows: torch.Tensor | None = None,
    ):
        self.residuals = residuals
        self.rows = rows
        # Pool index of each training row (-1 where the row is not pooled; one past the last row too), so
        # the row to leave out is one lookup per query, not a comparison with every pooled row. The pool
        # holds each training row once (train.py).
        self._index_of_row: torch.Tensor | None = None
        if rows is not None:
            self._index_of_row = torch.full((int(rows.max()) + 2,), -1, dtype=torch.long, device=rows.device)
            self._index_of_row[rows] = torch.arange(len(rows), device=rows.device)
        self.neighbours = min(neighbours, len(residuals))
        self.n_categories = list(n_categories or [])
        self.state_bounds = state_bounds if self.n_categories else None
        squared_norms = (trends * trends).sum(dim=1)
        # Squared distances up to a per-query constant (|t|^2 is the same for all candidates of a query):
        # offsets - 2 * query @ keys.T. With states, each differing state adds a penalty larger than any
        # difference of trend distances, folded into the same product: keys [trend, one-hot states],
        # query [trend, penalty / 2 * one-hot states], offsets |trend|^2 + penalty * Dd, so matching
        # states cancel the offset (one matrix product per step instead of two passes over the distances).
        self._keys, self._offsets, self._state_penalty = trends, squared_norms, 0.0
        if states is not None and self.n_categories:
            self._state_penalty = 8.0 * float(squared_norms.max()) + 1.0
            self._keys = torch.cat([trends, one_hot_states(states, self.n_categories).to(trends.device)], dim=1)
            self._offsets = squared_norms + self._state_penalty * len(self.n_categories)

    def draw(self, trend: torch.Tensor, generator: torch.Generator, states: torch.Tensor | None = None) -> torch.Tensor:
        """One residual [B, D] for each current trend [B, D] (and current states [B, Dd])."""
        return self.pick(trend, generator, states)[0]

    def pick(
        self,
        trend: torch.Tensor,
        generator: torch.Generator,
        states: torch.Tensor | None = None,
        after: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``draw``, leaving out the residual of the training row right after ``after`` [B] (the row each
        query's previous innovation came from) when the pool knows its ``rows``. Returns the residuals
        [B, D] and the rows [B] they came from (None when the pool does not know its rows)."""
        batch = len(trend)
        bounded = self.state_bounds is not None and states is not None
        if self.neighbours == 0 and not bounded:
            chosen = torch.randint(0, len(self.residuals), (batch,), generator=generator)
            return self.residuals[chosen], self._rows_of(chosen)
        if self.neighbours == 0:
            candidates = torch.randint(0, len(self.residuals), (batch, BOOTSTRAP_CANDIDATES), generator=generator)
        else:
            query = trend
            if self._state_penalty:
                if states is None:
                    raise ValueError("this pool matches states: pass the current states")
                query = torch.cat([trend, 0.5 * self._state_penalty * one_hot_states(states, self.n_categories)], dim=1)
            distances = self._offsets - 2.0 * query @ self._keys.T
            if self._index_of_row is not None and after is not None:
                following = (after.to(self._index_of_row.device) + 1).clamp(0, len(self._index_of_row) - 1)
                banned = self._index_of_row[following].to(distances.device)
                pooled = banned >= 0
                distances[torch.arange(batch, device=distances.device)[pooled], banned[pooled]] = torch.inf
            candidates = distances.topk(self.neighbours, dim=1, largest=False).indices
        if not bounded:
            pick = torch.randint(0, candidates.shape[1], (batch, 1), generator=generator).to(candidates.device)
            chosen = candidates.gather(1, pick)[:, 0]
            return self.residuals[chosen.to(self.residuals.device)], self._rows_of(chosen)
        assert states is not None
        low, high = self.allowed(states)
        innovations = self.residuals[candidates.to(self.residuals.device)]  # [B, K, D]
        new_rows = trend[:, None] + innovations
        inside = ((new_rows >= low[:, None]) & (new_rows <= high[:, None])).all(dim=-1)
        # A uniform pick among the candidates that keep the row inside, among all where none does; then
        # what is still outside goes to the nearest allowed value. (Measured better than searching more
        # candidates, or taking the value a training row in the same states had: docs/DECISIONS.md.)
        score = torch.rand(inside.shape, generator=generator).to(inside.device) + inside.float()
        best = score.argmax(dim=1)
        innovation = innovations[torch.arange(batch, device=inside.device), best]
        chosen = candidates.gather(1, best[:, None].to(candidates.device))[:, 0]
        return torch.maximum(torch.minimum(trend + innovation, high), low) - trend, self._rows_of(chosen)

    def _rows_of(self, chosen: torch.Tensor) -> torch.Tensor | None:
        return None if self.rows is None else self.rows[chosen.to(self.rows.device)]

    def allowed(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The interval ``low``/``high`` [..., D] the states [..., Dd] allow each feature: the intersection
        of each state's interval, unbounded where the intersection is empty (a combination never seen in
        training, so no coupling speaks for it)."""
        assert self.state_bounds is not None
        state_low, state_high = self.state_bounds
        offsets = torch.tensor([0, *self.n_categories[:-1]], device=states.device).cumsum(0)
        slots = states + offsets  # [..., Dd]
        low, high = state_low[slots].amax(dim=-2), state_high[slots].amin(dim=-2)
        empty = low > high
        return low.masked_fill(empty, -torch.inf), high.masked_fill(empty, torch.inf)
