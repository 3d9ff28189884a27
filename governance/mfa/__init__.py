"""Second factor in the portal: enrolment (QR code and manual key), verification, removal, and the
``require_step_up`` guard for sensitive views and admin actions."""
