"""The ground floor: what workflows and activities both speak.

Errors (the catalogue), the contract models, the policies (timeouts, retries, poll curve), the text and
time formats, and the messages between a workflow and its activities. It imports nothing of ours.
"""
