"""The dashboard's forms: upload, restore, delete and the run history's filters."""

from django import forms

from backups_app.jobs import jobs
from backups_app.models import CronRun


class UploadForm(forms.Form):
    # An empty file is refused by the upload checks, in the same words as any other bad file.
    file = forms.FileField(
        allow_empty_file=True, error_messages={"required": "choose a backup file to upload"}
    )


class RestoreForm(forms.Form):
    """Nothing to fill in: the page says what happens; the POST (with its CSRF token) does it."""


class DeleteForm(forms.Form):
    """Deleting the only backup left needs a second, explicit confirmation; deleting the
    offsite copy too is asked for, never the default."""

    confirm_last = forms.BooleanField(required=False, label="Yes, delete the only backup there is")
    # Shown only where the page offers it (restore_views.offsite_facts: a copy, not locked).
    delete_offsite = forms.BooleanField(required=False, label="Also delete its offsite copy")

    def __init__(self, *args, is_last=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.is_last = is_last

    def clean(self):
        cleaned = super().clean()
        if self.is_last and not cleaned.get("confirm_last"):
            raise forms.ValidationError(
                "this is the only backup: confirm that you want to be left with none",
                code="last_backup",
            )
        return cleaned


class HistoryFilterForm(forms.Form):
    """The run history's filters: every job (and restores) is listed even before it ran."""

    job = forms.ChoiceField(required=False)
    status = forms.ChoiceField(
        required=False, choices=[("", "any status"), *CronRun.Status.choices]
    )

    def __init__(self, data=None, **kwargs):
        super().__init__(data, **kwargs)
        names = jobs.history_names()
        asked = (data or {}).get("job", "")
        if asked and asked not in names and len(asked) <= 100:
            names.append(asked)  # a job no longer registered: its history is still there
        self.fields["job"].choices = [("", "all jobs"), *((name, name) for name in names)]

    def filter(self, runs):
        """The runs matching the valid filters (an invalid one is ignored)."""
        self.is_valid()
        cleaned = getattr(self, "cleaned_data", {})
        if cleaned.get("job"):
            runs = runs.filter(job_name=cleaned["job"])
        if cleaned.get("status"):
            runs = runs.filter(status=cleaned["status"])
        return runs

    @property
    def active(self):
        self.is_valid()
        return any(getattr(self, "cleaned_data", {}).values())
