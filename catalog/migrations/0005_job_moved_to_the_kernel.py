"""Jobs became the kernel's (kernel.models.Job): every feature starts them now, not only the
catalog's import. The tables stay where they are (the kernel's models keep their names); only
Django's idea of which app owns them moves, in kernel/migrations/0003_job.py."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('catalog', '0004_product_count'),
        ('core', '0003_job'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name='JobFile'),
                migrations.DeleteModel(name='Job'),
            ],
            database_operations=[],
        ),
    ]
