"""A stock django-oauth-toolkit server: the peer Gatehouse's token issuance is measured against."""
