"""The service layer below the adapters: one module per feature.

Adapters (CLI, Telegram, web, API) parse and render; the services check input, plan, start and
read jobs. Each adapter imports only the services it uses, the way Netflix's Dispatch keeps a
`<feature>/service.py` that its Slack plugin imports. Activities are thin wrappers over the same
planning code (job_plans.py), so the client and the workflows never import each other.
"""
