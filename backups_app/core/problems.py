"""A health problem, in words and with what to do next; its own module so that every problem
source (offsite copies, replication) can build one without importing health, which reads them."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    words: str  # a few words: "no backup" (the /healthz and `checkbackups` text)
    advice: str = ""  # a sentence with what to do next, for the pages

    def __str__(self):
        return self.words

    @property
    def sentence(self):
        return self.advice or self.words[:1].upper() + self.words[1:] + "."
