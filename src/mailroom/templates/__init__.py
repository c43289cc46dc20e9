"""SES stored templates kept as files and rendered locally as SES renders them.

``syntax`` parses and ``handlebars`` renders (the subset of Handlebars SES documents), ``files`` the
on-disk layout (MAILROOM_TEMPLATES_DIR), ``compare`` what a push would change, ``mime``
the rendered message as MIME, ``remote`` the SES v2 template calls over a boto3 client
handed in. A foundation: imports nothing of mailroom outside this folder.
"""
