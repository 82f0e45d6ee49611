"""Create the number sequences up front, so concurrent first uses never race to create them."""

from django.db import migrations


def create_sequences(apps, schema_editor):
    Sequence = apps.get_model("batches", "Sequence")
    for name in ("account", "batch"):
        Sequence.objects.get_or_create(name=name)


class Migration(migrations.Migration):
    dependencies = [("batches", "0001_initial")]

    operations = [migrations.RunPython(create_sequences, migrations.RunPython.noop)]
