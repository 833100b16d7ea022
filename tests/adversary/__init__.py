"""The adversary suite: hostile users and operators against money and privacy (issue 13)."""
