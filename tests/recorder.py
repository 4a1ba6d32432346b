"""A run reporter for tests: keeps every message, ignores progress."""


class Recorder:
    def __init__(self):
        self.messages = []

    def progress(self, description, total):
        return lambda done, total: None

    def message(self, text):
        self.messages.append(text)
